# traffic-shaping.scheduler: strict priority across RFC 4594 classes. The
# highest non-empty class always sends first; each class has a bounded queue
# (tail drop, counted) so a flood in one class cannot eat the heap.
from capdev.shards import sdk
from capdev.shards.shaping import classes

QUEUE_PACKETS = 16


class Shard(sdk.Shard):
    def start(self):
        self.queues = {}
        self.dropped = {}
        self.sent = {}
        for cls in classes.PRIORITY:
            self.queues[cls] = []
            self.dropped[cls] = 0
            self.sent[cls] = 0

    def enqueue(self, cls, pkt):
        q = self.queues[classes.check(cls)]
        if len(q) >= QUEUE_PACKETS:
            self.dropped[cls] += 1
            return False
        q.append(pkt)
        return True

    def dequeue(self):
        """(class, packet) of the highest-priority waiting packet, or None."""
        for cls in classes.PRIORITY:  # a tuple: fixed order on both runtimes
            q = self.queues[cls]
            if q:
                self.sent[cls] += 1
                return cls, q.pop(0)
        return None

    def backlog(self):
        return sum(len(q) for q in self.queues.values())

    def health(self):
        return {"ok": True, "backlog": self.backlog(), "sent": sum(self.sent.values()),
                "dropped": sum(self.dropped.values())}
