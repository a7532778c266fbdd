"""compozy's contract suite, run against the store the compozy plugin provides per backend.

To put another implementation of the repository protocols under the same tests, override the
``compozy_store`` fixture in a conftest.py.
"""

from compozy_testkit.contract.suite import *  # noqa: F403
