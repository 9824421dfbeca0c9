"""Start-up: `openkontext --help` and every command's help without importing torch, and an edit
on the embedded model without transformers (benchmarks/startup.py times both)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import pytest

# Runs the CLI in a fresh interpreter, then prints which heavy modules it imported.
RUN_CLI = textwrap.dedent("""
    import json, sys
    {block}
    sys.argv = ["openkontext", *json.loads(sys.argv[1])]
    from openkontext.cli import main
    try:
        main()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    heavy = ("torch", "transformers", "numpy", "PIL", "fastapi", "sqlalchemy", "uvicorn")
    print(json.dumps({{"code": code, "imported": [m for m in heavy if m in sys.modules]}}))
""")

# An interpreter in which `import transformers` fails, as where it is not installed.
NO_TRANSFORMERS = textwrap.dedent("""
    class NoTransformers:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == "transformers":
                raise ModuleNotFoundError("no module named transformers", name=name)
    sys.meta_path.insert(0, NoTransformers())
""")


def run_cli(args: list[str], block: str = "") -> dict:
    """Run `openkontext ARGS` in a new interpreter (after `block`): its exit code and imports."""
    code = RUN_CLI.format(block=block)
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["edit", "--help"],
        ["generate", "--help"],
        ["chat", "--help"],
        ["world", "--help"],
        ["world", "sample", "--help"],
        ["train", "mini", "--help"],
        ["eval", "--help"],
        ["serve", "--help"],
        ["ui", "--help"],
    ],
)
def test_help_imports_no_torch(args):
    result = run_cli(args)
    assert result["code"] in (0, 2)  # no_args_is_help exits with 2 in recent click
    assert result["imported"] == []


def test_embedded_edit_runs_without_transformers(scene, tmp_path):
    out = tmp_path / "out.png"
    args = ["edit", str(scene), "make the circle blue", "-o", str(out), "--seed", "1"]
    result = run_cli(args, block=NO_TRANSFORMERS)
    assert result["code"] == 0
    assert "torch" in result["imported"] and "transformers" not in result["imported"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("package", ["openkontext.world", "openkontext.eval"])
def test_lazy_package_names_all_resolve(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018
