# bench/a4_page.sh: sourced by bench/run.sh and bench/recognizer.sh (not run on its own).
# page LANG FONT OUT: an A4 300 dpi page of LANG's text (tests/data/text/LANG.txt), repeated
# to fill it, grey, in $work (the caller's folder); kept if OUT exists.
page() {
    local lang=$1 font=$2 out=$3
    [ -f "$out" ] && return
    # Paragraphs of the test text, wrapped to the text width (2080 px: pango-view takes points,
    # 499 pt at 300 dpi), as on a book page.
    for _ in $(seq 1 14); do tr "\n" " " <"tests/data/text/$lang.txt"; printf "\n\n"; done >"$work/$lang.fill.txt"
    pango-view --font="$font" --dpi=300 --margin=0 --width=499 --wrap=word --background=white \
        --foreground=black -q -o "$work/$lang.body.png" "$work/$lang.fill.txt"
    vips colourspace "$work/$lang.body.png" "$work/$lang.grey.v" b-w
    # (pango's 499 pt come out a pixel or two under 2080 px: the crop takes what there is)
    local w h
    w=$(vipsheader -f width "$work/$lang.grey.v")
    h=$(vipsheader -f height "$work/$lang.grey.v")
    vips crop "$work/$lang.grey.v" "$work/$lang.crop.v" 0 0 $((w < 2080 ? w : 2080)) $((h < 3100 ? h : 3100))
    vips embed "$work/$lang.crop.v" "$out" 200 200 2480 3508 --extend white
    rm -f "$work/$lang".*.v "$work/$lang.body.png"
}
