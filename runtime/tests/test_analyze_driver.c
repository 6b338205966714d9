/* test_analyze_driver.c: runs libcyanalyze's whole pipeline (read, symbolise, aggregate)
 * over every capture named on the command line, for the sanitizer test
 * (tests/test_capture_sanitize.py builds it with -fsanitize=address,undefined).
 * Prints one line per file: "ok", "truncated" or "rejected <reason>".
 * With --follow first: each capture is copied into FILE.grow in eight steps, followed
 * (cya_follow_*) and polled after each; one line per file: "follow <allocated bytes> <live
 * bytes> <complete>" or "rejected <reason>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cyanalyze.h"

static int follow(const char *path)
{
    FILE *in = fopen(path, "rb");
    if (!in)
        return 0;
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    unsigned char *data = malloc(size > 0 ? (size_t)size : 1);
    size_t got = data ? fread(data, 1, (size_t)size, in) : 0;
    fclose(in);
    char grow[4096];
    snprintf(grow, sizeof grow, "%s.grow", path);
    FILE *out = fopen(grow, "wb");
    if (!data || !out) {
        free(data);
        if (out)
            fclose(out);
        return 0;
    }
    size_t header = 16;
    if (got >= 16)
        header += (size_t)data[12] | (size_t)data[13] << 8 | (size_t)data[14] << 16 | (size_t)data[15] << 24;
    if (header > got)
        header = got;
    fwrite(data, 1, header, out);
    fflush(out);
    int error = 0;
    char message[512];
    cya_follower *f = cya_follow_open(grow, "/nonexistent/*", &error, message, sizeof message);
    if (!f) {
        printf("%s rejected %d %s\n", path, error, message);
    } else {
        size_t written = header;
        int ok = 1;
        for (int step = 1; step <= 8 && ok; step++) {
            size_t upto = step == 8 ? got : got * (size_t)step / 8 + 7;
            if (upto > got)
                upto = got;
            if (upto > written) {
                fwrite(data + written, 1, upto - written, out);
                fflush(out);
                written = upto;
            }
            ok = cya_follow_poll(f, message, sizeof message);
            size_t ncells;
            const cya_follow_cell *cells = cya_follow_get_cells(f, &ncells);
            const cya_symbols *s = cya_follow_get_symbols(f);
            size_t nlocs;
            cya_symbols_locations(s, &nlocs);
            for (size_t k = 0; ok && k < ncells; k++) {
                size_t n;
                const uint32_t *frames = cya_symbols_stack(s, cells[k].stack_id, &n);
                for (size_t j = 0; j < n; j++)
                    if (frames[j] >= nlocs) {
                        printf("%s bad location index\n", path);
                        return -1;
                    }
            }
        }
        const cya_follow_totals *t = cya_follow_get_totals(f);
        if (ok)
            printf("%s follow %llu %llu %d\n", path, (unsigned long long)t->alloc_bytes,
                   (unsigned long long)t->live_bytes, t->complete);
        else
            printf("%s rejected poll %s\n", path, message);
        cya_follow_close(f);
    }
    fclose(out);
    remove(grow);
    free(data);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--follow") == 0) {
        for (int i = 2; i < argc; i++)
            if (follow(argv[i]) < 0)
                return 1;
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        int error = 0;
        char message[512];
        cya_capture *c = cya_open(argv[i], &error, message, sizeof message);
        if (!c) {
            printf("%s rejected %d %s\n", argv[i], error, message);
            continue;
        }
        size_t nevents, nstacks, nlocs;
        const cya_event *events = cya_get_events(c, &nevents);
        const cya_stack *stacks = cya_get_stacks(c, &nstacks);
        unsigned long long sum = 0;
        for (size_t k = 0; k < nevents; k++)
            sum += events[k].size + events[k].kind;
        cya_symbols *s = cya_symbolize_search(c, "/nonexistent/*");
        if (!s) {
            printf("%s symbolize failed\n", argv[i]);
            return 1;
        }
        cya_symbols_locations(s, &nlocs);
        for (size_t k = 0; k < nstacks; k++) {
            size_t n;
            const uint32_t *frames = cya_symbols_stack(s, stacks[k].id, &n);
            for (size_t j = 0; j < n; j++)
                if (frames[j] >= nlocs) {
                    printf("%s bad location index\n", argv[i]);
                    return 1;
                }
        }
        cya_analyze_options options = {.include_native_frames = 1, .runner_prefixes = "<frozen runpy\n/nonexistent/"};
        char *json = cya_analyze_json(c, s, &options, message, sizeof message);
        if (!json) {
            printf("%s analyze failed: %s\n", argv[i], message);
            return 1;
        }
        const cya_status *st = cya_get_status(c);
        printf("%s %s %zu %llu\n", argv[i], st->truncated ? "truncated" : "ok", nevents, sum);
        cya_free(json);
        cya_symbols_close(s);
        cya_close(c);
    }
    return 0;
}
