"""Sends a fixed number of GETs over one keep-alive connection, each with a distinct x-user-id.

For scripts/bench-envoy-instructions.sh: unlike wrk, it sends an exact count, so instructions
can be divided by requests. Loopback only; every request has a timeout.

Usage: requests.py PORT COUNT [FIRST_USER]
"""
import http.client
import sys


def main() -> int:
    port, count = int(sys.argv[1]), int(sys.argv[2])
    first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    failed = 0
    for n in range(first, first + count):
        conn.request("GET", "/", headers={"Host": "checkout.local", "x-user-id": f"user-{n}"})
        response = conn.getresponse()
        response.read()
        failed += response.status != 200
    print(f"sent {count}, not 200: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
