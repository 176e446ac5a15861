"""What the tests share: the stack's addresses and small helpers, the running services, one
topic reader, the problem checker, the fuzz runner, the privacy scan and the sample bodies.
Tests import their helpers from here, never from another test module or another folder's
conftest.py."""
