from tests.emulator_fixture import *  # noqa: F403
from tests.syncer_fixture import *  # noqa: F403
