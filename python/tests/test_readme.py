"""The five-line snippet of the README's Python section runs as printed."""

import re

from conftest import REPO


def test_readme_snippet_runs():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python") :]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(snippet.strip().splitlines()) == 5
    scope = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    opt = scope["opt"]
    assert opt.controller.step == opt.controller.total_steps
    assert len(opt.trace) == opt.controller.decisions
