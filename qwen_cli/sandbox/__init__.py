"""Run model-written Python in a sandbox: one-shot programs (pass@k) and stateful sessions.

``run_program``/``run_programs`` give an ``Outcome`` per program; ``Session`` keeps a Python
process between cells and returns a ``CellResult`` per cell. Both start the same sandbox
(``box.Box``: bubblewrap namespaces, read-only host, private tmpfs, no-new-privs, seccomp, a
cgroup memory and process cap) around the same kernel (``kernel.py``: a program runs alone and
its exit status is the verdict; a session's cells run in a worker beside a supervisor that alone
talks to the host). ``isolation()`` names what is in force on this machine; docs/sandbox.md
explains it.
"""

from qwen_cli.sandbox.host import isolation
from qwen_cli.sandbox.limits import Limits, SandboxError
from qwen_cli.sandbox.programs import Outcome, run_program, run_programs
from qwen_cli.sandbox.session import CellResult, Session

__all__ = ["CellResult", "Limits", "Outcome", "SandboxError", "Session", "isolation", "run_program", "run_programs"]
