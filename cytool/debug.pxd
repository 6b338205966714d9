# cytool's in-code breakpoint for Cython code, safe without the GIL:
#
#     from cytool.debug cimport breakpoint
#     cdef int work(int n) nogil:
#         breakpoint()        # stops here: in `cytool debug`, in gdb started on the terminal,
#                             # or prints `cytool stack` of this thread (cytool/inline_break.py)
#
# Under a debugger the thread raises SIGTRAP itself (no GIL needed: cytool's gdb extension
# shows this .pyx line); otherwise it takes the GIL and calls cytool.inline_break.from_c().
# CYTOOL_BREAKPOINT=0 makes it one test of a static int (the environment is read once).

cdef extern from *:
    """
    #include <signal.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>

    static int cytool_breakpoint_state = -1;  /* -1: CYTOOL_BREAKPOINT not read yet, 0: off, 1: on */

    static long cytool_breakpoint_tracer(void) {
        char line[256];
        long tracer = 0;
        FILE *status = fopen("/proc/self/status", "r");
        if (status == NULL)
            return 0;
        while (fgets(line, sizeof line, status) != NULL) {
            if (strncmp(line, "TracerPid:", 10) == 0) {
                tracer = strtol(line + 10, NULL, 10);
                break;
            }
        }
        fclose(status);
        return tracer;
    }

    /* cytool's gdb extension knows this name: the stop is shown at its Cython caller. */
    static void cytool_breakpoint_stop(void) __attribute__((noinline));
    static void cytool_breakpoint_stop(void) {
        raise(SIGTRAP);
    }

    static void cytool_breakpoint_run(void) {
        if (cytool_breakpoint_state < 0) {
            const char *setting = getenv("CYTOOL_BREAKPOINT");
            cytool_breakpoint_state = !(setting != NULL && strcmp(setting, "0") == 0);
            if (!cytool_breakpoint_state)
                return;
        }
        if (cytool_breakpoint_tracer() > 0) {
            cytool_breakpoint_stop();
            return;
        }
        {
            PyGILState_STATE gil = PyGILState_Ensure();
            PyObject *type, *value, *traceback;
            PyObject *module, *result = NULL;
            PyErr_Fetch(&type, &value, &traceback);
            module = PyImport_ImportModule("cytool.inline_break");
            if (module != NULL) {
                result = PyObject_CallMethod(module, "from_c", NULL);
                Py_DECREF(module);
            }
            if (result == NULL)
                PyErr_WriteUnraisable(NULL);
            Py_XDECREF(result);
            PyErr_Restore(type, value, traceback);
            PyGILState_Release(gil);
        }
    }

    /* A store after the call keeps an instruction of the breakpoint's own line after it
       returns: a debugger finishing the breakpoint lands on that line, not the next. */
    static volatile int cytool_breakpoint_landing;
    #define CYTOOL_BREAKPOINT() do { if (cytool_breakpoint_state) { cytool_breakpoint_run(); \
        cytool_breakpoint_landing = 1; } } while (0)
    """
    void breakpoint "CYTOOL_BREAKPOINT" () nogil
