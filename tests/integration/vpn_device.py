"""The device agent with the VPN data path wired in, as agent.py should do it
(see the hook described in docs/shards.md): after each applied instruction the
VPN link binds cipher, tunnel and auth; a small echo application answers
every datagram that arrives through the tunnel.
Usage: vpn_device.py BOARD.json DEVICE.json STATE_DIR VPN.json
(VPN.json holds the link options; the board schema has no "vpn" field yet.)"""

import asyncio
import json
import sys

from capdev import agent, config
from capdev.shards.vpn.link import VpnLink


class VpnAgent(agent.Agent):
    def __init__(self, board, ident, state_dir, vpn_opts):
        self.vpn = None
        super().__init__(board, ident, state_dir)
        self.vpn = VpnLink(self.manager, self._key, self.device_id, vpn_opts)

    def apply(self, msg):
        results = super().apply(msg)
        if self.vpn is not None:
            self.vpn.after_apply(results)
        return results

    async def echo(self):
        while True:
            await asyncio.sleep(0.01)
            t = self.vpn.tunnel()
            if t is None or t.ep is None:
                continue
            m = t.recv()
            while m is not None:
                t.send(b"echo " + m)
                m = t.recv()

    async def run(self):
        self._echo = asyncio.create_task(self.echo())
        await super().run()


def main(argv):
    board = config.load_board(argv[0])
    ident = config.load_identity(argv[1])
    with open(argv[3]) as f:
        vpn_opts = json.load(f)
    asyncio.run(VpnAgent(board, ident, argv[2], vpn_opts).run())


if __name__ == "__main__":
    main(sys.argv[1:])
