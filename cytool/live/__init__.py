"""The live memory view: a capture followed while the traced program writes it.

    follow.py  the C follower (libcyanalyze's cya_follow_*) through ctypes: figures per
               .pyx / Python line, per thread, as the capture grows
    view.py    the terminal view (rich), its keys, and `run_live`, which `cytool live`,
               `cytool profile --live` and `cytool attach --live` share
"""
