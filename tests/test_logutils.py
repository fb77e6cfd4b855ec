"""Tests of gemred.logutils.run_job, the wrapper of every workflow script, in a process of its
own as Snakemake runs it: its log, its exit status, and what it leaves on success or failure."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import sys
    from types import SimpleNamespace

    from gemred.logutils import run_job

    class Params(dict):
        def items(self):
            return super().items()

    out, log, fail = sys.argv[1], sys.argv[2], sys.argv[3] == "fail"
    smk = SimpleNamespace(
        rule="demo_rule", input=[], output=[out], log=[log], params=Params(order=3), config={}
    )

    def main(smk):
        print("written without a newline", end="")  # left in the buffer for run_job to flush
        if fail:
            raise ValueError("the step went wrong")
        with open(smk.output[0], "w") as fh:
            fh.write("product")

    run_job(smk, main)
    print("after run_job")  # not reached on success: the job's process ends in run_job
    """
)


def _run(tmp_path, mode: str) -> tuple[subprocess.CompletedProcess, str]:
    script = tmp_path / "job.py"
    script.write_text(_SCRIPT)
    log = tmp_path / "logs" / "job.log"
    # Block-buffered standard output, as in a Snakemake job, so that a missed flush shows.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "product.txt"), str(log), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return result, log.read_text()


def test_run_job_success_ends_the_process_with_everything_flushed(tmp_path):
    result, log = _run(tmp_path, "ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "written without a newline"
    assert (tmp_path / "product.txt").read_text() == "product"
    assert "rule demo_rule (gemred " in log
    assert log.rstrip().splitlines()[-1].endswith(tuple(f"{d} s" for d in "0123456789"))
    assert "rule demo_rule done in" in log
    assert "rule demo_rule done in" in result.stderr


def test_run_job_failure_logs_the_traceback_and_exits_non_zero(tmp_path):
    result, log = _run(tmp_path, "fail")
    assert result.returncode != 0
    assert "rule demo_rule failed" in log
    assert "ValueError: the step went wrong" in log
    assert "done in" not in log
    assert not (tmp_path / "product.txt").exists()
    assert "after run_job" not in result.stdout


def _need_glibc() -> None:
    import ctypes

    import pytest

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc (>= 2.33): the allocator is left as it is")


def _job_output(tmp_path, script: str, *args: str, env: dict | None = None) -> dict:
    """Run ``script`` in a process of its own, as Snakemake runs a job, with an output file,
    a log file and ``args`` as its arguments; the JSON it wrote to its output."""
    import json

    path = tmp_path / "job.py"
    path.write_text(script)
    out = tmp_path / "job.json"
    result = subprocess.run(
        [sys.executable, str(path), str(out), str(tmp_path / "job.log"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import ctypes
    import json
    import sys
    from types import SimpleNamespace

    import numpy as np

    from gemred.logutils import run_job

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2

    smk = SimpleNamespace(
        rule="memory_rule", input=[], output=[sys.argv[1]], log=[sys.argv[2]], params={}, config={}
    )

    def main(smk):
        array = np.ones(96 * 2**20 // 4, np.float32)
        mapped_while_held = mallinfo2().hblkhd
        del array
        after = mallinfo2()
        with open(smk.output[0], "w") as fh:
            json.dump({"mapped": mapped_while_held, "heap": after.arena, "free": after.fordblks}, fh)

    run_job(smk, main)
    """
)


def test_run_job_keeps_freed_memory_for_reuse(tmp_path):
    """A job's large arrays come from malloc's heap and their memory stays there once freed
    (glibc), so the next array reuses pages already faulted in instead of new ones."""
    _need_glibc()
    stats = _job_output(tmp_path, _MEMORY_SCRIPT)
    size = 96 * 2**20
    assert stats["mapped"] < size  # by default glibc maps a block this large on its own
    assert stats["heap"] >= size  # ... and unmaps it when freed
    assert stats["free"] >= size


_THREAD_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import threading
    from types import SimpleNamespace

    import numpy as np

    from gemred.logutils import run_job

    def private_mb():
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("RssAnon:"))

    def main(smk):
        def worker():
            array = np.ones(40 * 2**20 // 4, np.float32)
            del array

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        before = private_mb()
        array = np.ones(40 * 2**20 // 4, np.float32)  # noqa: F841  (held while measured)
        with open(smk.output[0], "w") as fh:
            json.dump({"growth_mb": private_mb() - before}, fh)

    smk = SimpleNamespace(
        rule="threads_rule", input=[], output=[sys.argv[1]], log=[sys.argv[2]], params={}, config={}
    )
    run_job(smk, main)
    """
)


def test_run_job_threads_reuse_each_others_freed_memory(tmp_path):
    """Memory a worker thread frees serves the main thread's next array (one malloc arena), so
    a job that reads ahead on a second thread does not hold a heap per thread."""
    _need_glibc()
    assert _job_output(tmp_path, _THREAD_MEMORY_SCRIPT)["growth_mb"] < 10  # 40 without the reuse


_HUGE_PAGES_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from types import SimpleNamespace

    import numpy as np

    from gemred.logutils import run_job

    def huge_page_kb(array):
        # AnonHugePages of the memory mapping that holds the array's middle byte (numpy
        # advises only the page-aligned part, which becomes a mapping of its own).
        address, found = array.ctypes.data + array.nbytes // 2, False
        with open("/proc/self/smaps") as fh:
            for line in fh:
                first = line.split()[0]
                if "-" in first and not first.endswith(":"):
                    start, stop = (int(part, 16) for part in first.split("-"))
                    found = start <= address < stop
                elif found and first == "AnonHugePages:":
                    return int(line.split()[1])
        raise RuntimeError("array not found in /proc/self/smaps")

    def measure(path):
        array = np.ones(64 * 2**20 // 4, np.float32)  # touched: faulted in
        with open(path, "w") as fh:
            json.dump({"huge_kb": huge_page_kb(array)}, fh)

    out, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "plain":
        measure(out)
    else:
        smk = SimpleNamespace(rule="pages_rule", input=[], output=[out], log=[log], params={}, config={})
        run_job(smk, lambda smk: measure(smk.output[0]))
    """
)


def _huge_page_kb(tmp_path, mode: str) -> int:
    # numpy's own default (huge pages asked for, on Linux >= 4.6), whatever this shell sets.
    env = {key: value for key, value in os.environ.items() if key != "NUMPY_MADVISE_HUGEPAGE"}
    return _job_output(tmp_path, _HUGE_PAGES_SCRIPT, mode, env=env)["huge_kb"]


def test_run_job_arrays_get_small_pages(tmp_path):
    """numpy asks for transparent huge pages for large arrays; in a workflow job it does not,
    as first touches of huge pages cost ten times more on the virtual machines we run on."""
    import pytest

    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("no /proc/self/smaps (not Linux)")
    if _huge_page_kb(tmp_path, "plain") == 0:
        pytest.skip("this kernel gives numpy's arrays no transparent huge pages anyway")
    assert _huge_page_kb(tmp_path, "job") == 0
