"""``python -m galore_supervisor``: see galore_supervisor.deployment (``make serve``)."""
from galore_supervisor.deployment import main

main()
