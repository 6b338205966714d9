/* test_analyze_driver.c: runs libcyanalyze's whole pipeline (read, symbolise, aggregate)
 * over every capture named on the command line, for the sanitizer test
 * (tests/test_capture_sanitize.py builds it with -fsanitize=address,undefined).
 * Prints one line per file: "ok", "truncated" or "rejected <reason>". */
#include <stdio.h>
#include <stdlib.h>

#include "cyanalyze.h"

int main(int argc, char **argv)
{
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
