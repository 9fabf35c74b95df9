"""``python -m tests.faulty FAULT [refproxier arguments...]``: run the reference proxier with one fault."""

import sys

from tests.faulty.faults import FAULTS


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in FAULTS:
        print(f"usage: python -m tests.faulty FAULT [refproxier args]; faults: {', '.join(FAULTS)}",
              file=sys.stderr)
        return 2
    FAULTS[sys.argv[1]].apply()
    from refproxier.cli import main as refproxier_main

    return refproxier_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
