"""The README's in-process example runs as written."""
import re
import runpy
from pathlib import Path


def test_readme_python_example_runs(tmp_path, capsys):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    runpy.run_path(str(script))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "['tiger cat', 'Egyptian cat', 'tabby']"
    assert "torch.Size([300, 451])" in out[1]
