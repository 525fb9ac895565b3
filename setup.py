"""Build-time step of pyproject.toml's build: the man pages (failover/cli/manpage.py).

Everything else is declared in pyproject.toml.  ``build_man`` runs as part of ``build``
(so in every wheel, sdist-built wheel and editable install, and in the Debian package's
pybuild) and writes build/man/NAME.1 from the programs' argparse parsers; install_data
puts them in share/man/man1 under the install prefix (the venv, /usr/local or /usr), where
``man NAME`` finds them.
"""

import os
import subprocess
import sys

from setuptools import Command, setup
from setuptools.command.build import build

HERE = os.path.dirname(os.path.abspath(__file__))
MAN_DIR = os.path.join("build", "man")
# the programs of failover/cli/launch.py (read by tests/test_manpages.py to keep them equal)
PROGRAMS = ["faild", "failsh", "failc", "failstat", "failctl", "failmon", "faildebug", "failkey", "hc", "hcmon"]


class build_man(Command):
    description = "generate the man pages from the argparse parsers (failover/cli/manpage.py)"
    user_options: list = []

    def initialize_options(self) -> None:
        pass

    def finalize_options(self) -> None:
        pass

    def run(self) -> None:
        # a fresh interpreter on the source tree: the parsers import failover's modules
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", "failover.cli.manpage", os.path.join(HERE, MAN_DIR)],
                       check=True, env=env, cwd=HERE, stdout=subprocess.DEVNULL)


class build_with_man(build):
    sub_commands = [*build.sub_commands, ("build_man", None)]


setup(cmdclass={"build": build_with_man, "build_man": build_man},
      data_files=[("share/man/man1", [f"{MAN_DIR}/{p}.1" for p in PROGRAMS])])
