/* python_frames.h: the Python frames of the calling thread at an allocation (python_frames.c). */
#ifndef CYTOOL_PYTHON_FRAMES_H
#define CYTOOL_PYTHON_FRAMES_H

#include <stdint.h>

/* The tracer's cytrace_pyframes_fn: walks the calling thread's interpreter frames. */
int python_frames_of_thread(uint64_t *words, int max, int skip, int *depth, uint64_t *chain);

/* Start handing the tracer Python frames (words cached for an earlier capture are void;
 * from the first start on, deaths of code objects are counted), and stop. The GIL must be
 * held to start. */
void python_frames_enable(void);
void python_frames_disable(void);

/* Pin `frame` (a frame object of the calling thread, or None to unpin): until unpinned it
 * must stay on the chain, suspended in a call (unpin it before it returns), and walks
 * stop comparing there; and recording there unless record_outside. GIL held; 0, or -1
 * with a TypeError. */
#include <Python.h>
int python_frames_pin(PyObject *frame, int record_outside);

#endif
