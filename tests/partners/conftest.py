# The inbound world and delivery fixtures serve every partners test (receipts build on them).
from tests.partners.inbound.conftest import deliver, world  # noqa: F401
