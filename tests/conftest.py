from tests.emulator_fixture import *  # noqa: F403
