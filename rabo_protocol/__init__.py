"""What the ServerApp and the ClientApp share, below both: the validated run and node config
(``config``, ``defaults``), the message format including the node profile (``wire``) and the
choice of device (``device``). Neither app imports the other; both import this."""
