r"""The reliability probe: every hostile input the test suite throws at the tool, counted by kind
as cases, passes and failures (the form of issue 22's probe: 48 cases, 31 passes, 16 failures).

A case passes when the tool does the right thing: bad input ends with exit code 2, one line
naming the problem and no traceback, and nothing half-written; a killed run resumes to the same
result; a damaged file is refused or read sanely. Hypothesis tests count each property once
(each checks 25-40 generated inputs, the same ones on every run).

    python benchmarks/reliability.py              # runs the probe's tests (its test files: about 10 minutes on 2 cores)
    python benchmarks/reliability.py --junit J    # tabulates a finished `pytest --junitxml J` run
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# kind of case -> the tests that are its cases (a file: all its tests; file::name: tests whose name starts so)
KINDS = {
    "bad input on the command line (missing, wrong-kind, corrupt, mismatched files; impossible targets; "
    "files against their schemas)": ["test_cli_reliability", "test_cli_count", "test_lut::test_cli_lut_errors",
                                     "test_export::test_bad_input_is_one_line", "test_bundle::test_import_errors"],
    "numeric options: NaN, inf, 0, negative, out of range": ["test_cli_numbers"],
    "property tests (hypothesis, 25-40 generated inputs each): any numeric option, any damaged file":
        ["test_properties"],
    "interrupted and resumed (Ctrl-C, a run stopped mid-epoch, truncated result files): the same result "
    "as uninterrupted":
        ["test_interrupts", "test_train::test_resume_equals_uninterrupted_run",
         "test_search::test_resume_from_an_interrupted_file", "test_search::test_cli_resume",
         "test_search::test_cli_recalibrate_search_resumes", "test_search::test_ctrl_c_during_search",
         "test_lut::test_build_resume", "test_bundle::test_write_bundle_refuses_existing_dirs"],
    "datasets: unreadable images, one class, untrusted CIFAR batches": [
        "test_data::test_imagefolder", "test_data::test_cifar10_batch_with_code", "test_data::test_cifar10_missing",
        "test_data::test_fashion_mnist_missing"],
}


def kind_of(classname: str, name: str) -> str | None:
    module = classname.split(".")[-1]
    for kind, selectors in KINDS.items():
        for sel in selectors:
            file, _, prefix = sel.partition("::")
            if module == file and name.startswith(prefix):
                return kind
    return None


def tabulate(junit: Path) -> tuple[dict, list[str]]:
    counts: dict[str, Counter] = {k: Counter() for k in KINDS}
    failed = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        kind = kind_of(case.get("classname", ""), case.get("name", ""))
        if kind is None:
            continue
        if case.find("skipped") is not None:
            counts[kind]["skipped"] += 1
            continue
        counts[kind]["cases"] += 1
        if case.find("failure") is not None or case.find("error") is not None:
            counts[kind]["failures"] += 1
            failed.append(f"{case.get('classname')}::{case.get('name')}")
        else:
            counts[kind]["passes"] += 1
    return counts, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--junit", type=Path, help="a junit XML of a pytest run to tabulate instead of running")
    args = ap.parse_args()
    from autoslim_hw.profilers.devices import cpu_id, cpu_model

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {cpu_model()} ({cpu_id()}); {time.strftime('%Y-%m-%d')}")
    junit = args.junit
    if junit is None:
        junit = Path(tempfile.mkdtemp()) / "reliability.xml"
        files = sorted({str(ROOT / "tests" / f"{sel.partition('::')[0]}.py") for sels in KINDS.values()
                        for sel in sels})
        t = time.time()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *files],
                       cwd=ROOT, check=False)
        print(f"ran in {time.time() - t:.0f} s")
    counts, failed = tabulate(junit)
    print("\n| kind | cases | passes | failures |\n|---|---|---|---|")
    for k, c in counts.items():
        print(f"| {k} | {c['cases']} | {c['passes']} | {c['failures']} |")
    total = sum((c for c in counts.values()), Counter())
    print(f"| **all** | {total['cases']} | {total['passes']} | {total['failures']} |")
    if total["skipped"]:
        print(f"\n{total['skipped']} skipped (a dataset or runtime missing on this machine)")
    for f in failed:
        print("failed:", f)


if __name__ == "__main__":
    main()
