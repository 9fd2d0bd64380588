"""Log in the way load-test tools and scripts do, from the server itself: GET the login form, take `_xsrf`
from the cookie, POST the form. Run inside a test machine with the system python3 (stdlib only):

    python3 scripted_login.py BASE_URL USER PASSWORD

The GET goes over ::1 and the POST over a new connection to 127.0.0.1: what a client that resolves
`localhost` to both and does not keep its first connection does (aiohttp closes a connection whose body it
did not read; its DNS cache hands out the addresses in turn). Prints the POST's status and Location; exits 0
only for JupyterHub's successful-login redirect (302).
"""

import http.client
import sys
from urllib.parse import urlencode


def request(host, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(host, 80, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def main(base_url, user, password):
    login = base_url.rstrip("/") + "/hub/login"
    form = request("::1", "GET", login)
    cookies = [value.split(";", 1)[0] for key, value in form.getheaders() if key.lower() == "set-cookie"]
    xsrf = next(c.split("=", 1)[1] for c in cookies if c.startswith("_xsrf="))
    body = urlencode({"username": user, "password": password, "_xsrf": xsrf})
    answer = request("127.0.0.1", "POST", login, body, {
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": "; ".join(cookies)})
    print(form.status, answer.status, answer.getheader("Location"))
    return 0 if answer.status == 302 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
