"""`python -m lowprec.train CONFIG.yaml [key=value ...]`, the same as `lowprec train`."""
import sys

from lowprec.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
