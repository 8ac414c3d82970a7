# capdev: the capshard device firmware (runs on MicroPython and CPython).
VERSION = "0.1.0"
