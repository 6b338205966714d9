"""What a Cython project is, as cytool sees it: where a `.pyx` sits in its package
(`layout`), and which build settings apply to it (`settings`, read from the command
line, `[tool.cytool]` in pyproject.toml (`pyproject`), the project's setup.py
(`setup_py`) and the module's own `# distutils:` comments), merged by `resolve`.

Order of precedence, highest first: CLI flags > [tool.cytool] > setup.py > `# distutils:`.
"""
