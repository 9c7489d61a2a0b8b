/*
 * lstm_dict MODEL punc|word|number: the words of one of the model's dictionaries as our
 * reader (src/engine/lstm/dawg.c) walks them, one a line, in the unicharset's spelling: the
 * integration test compares them with Tesseract's own dawg2wordlist.
 */
#include "engine/lstm/model.h"

#include <stdio.h>
#include <string.h>

static const ocp_lstm_model *model;

static int print_word(const int *ids, int n, void *arg)
{
    (void)arg;
    for (int i = 0; i < n; i++)
        fputs(model->unicharset.text[ids[i]], stdout);
    putchar('\n');
    return 0;
}

int main(int argc, char **argv)
{
    char err[400];
    ocp_lstm_model *m = NULL;
    const char *kinds[3] = {"punc", "word", "number"};
    int k = -1;
    for (int i = 0; argc == 3 && i < 3; i++)
        if (strcmp(argv[2], kinds[i]) == 0)
            k = i;
    if (k < 0) {
        fprintf(stderr, "usage: lstm_dict MODEL punc|word|number\n");
        return 2;
    }
    if (ocp_lstm_model_load(argv[1], &m, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    model = m;
    long n = ocp_dawg_words(&m->dawg[k], print_word, NULL);
    fprintf(stderr, "%ld words\n", n);
    ocp_lstm_model_free(m);
    return n > 0 ? 0 : 1;
}
