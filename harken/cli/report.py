"""`harken report RUN_DIR`: charts and a page for a training run or a demo folder.

Owns: the command's options and its closing line. The pages are `harken.report.run.report`
(training runs) and `harken.demo.report` (demo folders).
"""

from __future__ import annotations

import argparse
import time


def _cmd_report(args: argparse.Namespace) -> int:
    from harken.report.run import report

    t0 = time.perf_counter()
    page = report(args.run_dir, args.out)
    n = len(list((page.parent / "plots").glob("*.png")))
    print(f"wrote {page} and {n} charts in {page.parent / 'plots'}/ ({time.perf_counter() - t0:.1f} s); "
          f"open it in a browser: file://{page.resolve()}")
    return 0


def register(top, groups) -> None:
    p = top.add_parser(
        "report",
        help="charts and an HTML page for a training run or a demo folder",
        description=(
            "Regenerate the charts (reward, accuracy, KL, completion length, loss, learning rate, ... "
            "whatever the run logged) and a page that opens from disk. DIR is a training run folder "
            "(holds metrics.jsonl; the page goes to DIR/report/) or a `harken demo` folder (holds demo.json; "
            "its report is rewritten in place)."
        ),
    )
    p.add_argument("run_dir", metavar="DIR", help="training run folder or demo folder")
    p.add_argument("--out", default=None, metavar="DIR", help="write the page and charts here instead")
    p.set_defaults(func=_cmd_report)
