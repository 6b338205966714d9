"""cytool in IPython and Jupyter (`%load_ext cytool`): `%%cytool` cells built through
cytool's cache (cells), their inline reports (inline) and the magics themselves
(magics)."""
