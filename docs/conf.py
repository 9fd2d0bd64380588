"""Sphinx configuration of the documentation site (MyST Markdown, Furo theme).

Build, failing on any warning:

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The reference pages are generated from the code at build time by ``_ext/tljh_reference.py``.
Nothing is downloaded at build time.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
# Document the checkout these docs belong to, not some other installed copy of the package.
sys.path.insert(0, os.path.dirname(HERE))

project = "The Littlest JupyterHub"
author = "The Littlest JupyterHub contributors"
copyright = "The Littlest JupyterHub contributors"

extensions = ["myst_parser", "tljh_reference"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "requirements.txt"]

# Every cross-reference must resolve; an unresolved one is a warning, and -W makes it an error.
nitpicky = True
# Quotes stay as typed: admins copy commands and names from the prose too.
smartquotes = False
myst_enable_extensions = ["colon_fence", "deflist"]
# `[text](page.md#some-heading)` links to headings (h1-h3) are checked like any other reference.
myst_heading_anchors = 3
# Bare text like "www.example.com" is never turned into a link behind the writer's back.
myst_linkify_fuzzy_links = False

html_theme = "furo"
html_title = "The Littlest JupyterHub"
html_static_path = []
# No request leaves the build machine.
html_theme_options = {}
