"""`python -m maq.runtime`: the same report as `maq info`."""
import sys

from maq.runtime.info import format_info, info

if __name__ == "__main__":
    print(format_info(info()))
    sys.exit(0)
