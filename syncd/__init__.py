"""syncd: mirror a folder into the DashScope Files API and publish a path -> file_id mapping.

Importing the package (``import syncd.mapping``, say) changes nothing in the host
program: start-up tricks belong to the ``syncd`` command (see ``syncd.__main__``).
"""

__version__ = "0.1.0"
