"""mkdocs hook: show the Sphinx cross-reference roles of arrayfs's docstrings
(``:class:`Name```, ``:meth:`name```, ...) as plain code.

mkdocstrings renders docstrings as Markdown, where a role comes out as the
literal text ``:class:`` in front of the code span. This drops the role (and
the ``~`` that Sphinx uses to shorten a dotted name), leaving the code span,
and the second colon of reStructuredText's ``text::`` before a literal block.
"""

import re

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|data|exc|obj|const|ref):<code>~?")


_LITERAL = re.compile(r"(?<=\w)::</p>")


def on_page_content(html, page, config, files):
    return _LITERAL.sub(":</p>", _ROLE.sub("<code>", html))
