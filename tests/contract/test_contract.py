"""Run the testkit's contract suite against this repository's Store, on every selected backend."""

from compozy_testkit.contract.suite import *  # noqa: F403
