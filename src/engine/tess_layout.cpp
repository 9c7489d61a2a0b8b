/*
 * tess_layout.cpp: the combo words of a page and their rows' geometry, from
 * libtesseract's public C++ API (tess_layout.h): its C API has neither
 * AnalyseLayout(merge_similar_words) nor the rows' attributes. The iterator
 * of the analysed page (GetIterator works on a page only analysed) walks the
 * words; nothing here recognises text.
 */
#include "engine/tess_layout.h"

#include <tesseract/baseapi.h>
#include <tesseract/resultiterator.h>

#include <cstdlib>
#include <memory>

int ocp__tess_layout_units(TessBaseAPI *handle, ocp_tess_unit **out)
{
    *out = nullptr;
    auto *api = reinterpret_cast<tesseract::TessBaseAPI *>(handle);
    std::unique_ptr<tesseract::PageIterator> layout(api->AnalyseLayout(true));
    if (!layout)
        return 0; /* an empty page */
    std::unique_ptr<tesseract::ResultIterator> it(api->GetIterator());
    if (!it)
        return -1;
    int n = 0, cap = 0, block = -1, para = -1, line = -1;
    ocp_tess_unit *units = nullptr;
    it->Begin();
    do {
        if (it->IsAtBeginningOf(tesseract::RIL_BLOCK)) {
            block++;
            para = -1;
        }
        if (it->IsAtBeginningOf(tesseract::RIL_PARA))
            para++;
        if (it->IsAtBeginningOf(tesseract::RIL_TEXTLINE))
            line++;
        ocp_tess_unit u{};
        if (!it->BoundingBox(tesseract::RIL_WORD, &u.x1, &u.y1, &u.x2, &u.y2))
            continue;
        int bx1, by1, bx2, by2;
        float mid = (u.x1 + u.x2) / 2.0f;
        if (it->Baseline(tesseract::RIL_TEXTLINE, &bx1, &by1, &bx2, &by2) && bx2 != bx1)
            u.baseline = by1 + (float)(by2 - by1) * (mid - bx1) / (float)(bx2 - bx1);
        else
            u.baseline = (float)u.y2;
        float row_height = 0, desc = 0, asc = 0;
        it->RowAttributes(&row_height, &desc, &asc);
        u.x_height = row_height - asc + desc; /* row height = x-height + ascenders - descenders */
        u.ascenders = asc;
        u.descenders = desc;
        u.block = block < 0 ? 0 : block;
        u.para = para < 0 ? 0 : para;
        u.line = line < 0 ? 0 : line;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            auto *grown = static_cast<ocp_tess_unit *>(realloc(units, sizeof *units * cap));
            if (!grown) {
                free(units);
                return -1;
            }
            units = grown;
        }
        units[n++] = u;
    } while (it->Next(tesseract::RIL_WORD));
    *out = units;
    return n;
}
