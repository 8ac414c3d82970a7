"""The device agent (with its board's "vpn" map, so the agent binds the VPN
slots after every instruction) plus a small echo application that answers
every datagram arriving through the tunnel: the test's traffic.
Usage: vpn_device.py BOARD.json DEVICE.json STATE_DIR"""

import asyncio
import sys

from capdev import agent, startup


class EchoAgent(agent.Agent):
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
    board, ident = startup.load_config(argv[0], argv[1])
    if board is None:
        raise SystemExit("boot stopped: " + ident)
    asyncio.run(EchoAgent(board, ident, argv[2]).run())


if __name__ == "__main__":
    main(sys.argv[1:])
