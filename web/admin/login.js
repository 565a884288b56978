// Signing in and out: the login form (with the server's throttle shown as a countdown) and the logout button.

import { api } from "./api.js";
import { $ } from "./state.js";
import { toast } from "./toast.js";

// Shows one of the page's three faces: "boot", "login" or "app".
export function show(which) {
  $("boot").hidden = which !== "boot";
  $("login").hidden = which !== "login";
  $("app").hidden = which !== "app";
}

export function showLogin(message) {
  show("login");
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  ($("username").value ? $("password") : $("username")).focus();
}

function waitText(seconds) {
  if (seconds >= 120) return `${Math.ceil(seconds / 60)} minutes`;
  return `${seconds} second${seconds === 1 ? "" : "s"}`;
}

// `signedIn` starts the app once the server accepted the password; `signedOut` stops it after the logout.
export function setupLogin({ signedIn, signedOut }) {
  let loginLock = 0;
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (loginLock) return;
    const username = $("username").value.trim();
    const password = $("password").value;
    const error = $("login-error");
    if (!username || !password) {
      error.textContent = "Enter your username and password.";
      error.hidden = false;
      return;
    }
    const submit = $("login-submit");
    submit.disabled = true;
    try {
      await api("/auth/login", { method: "POST", body: { username, password } });
      $("password").value = "";
      error.hidden = true;
      signedIn();
    } catch (e) {
      error.hidden = false;
      if (e.status === 401) {
        error.textContent = "Wrong username or password.";
        $("password").select();
      } else if (e.status === 429) {
        let left = e.retryAfter || 30;
        error.textContent = `Too many attempts. Try again in ${waitText(left)}.`;
        loginLock = setInterval(() => {
          left -= 1;
          if (left <= 0) {
            clearInterval(loginLock);
            loginLock = 0;
            submit.disabled = false;
            error.textContent = "You can try again now.";
          } else {
            error.textContent = `Too many attempts. Try again in ${waitText(left)}.`;
          }
        }, 1000);
        return;
      } else {
        error.textContent = e.status ? e.message : "Can't reach natter. Check your connection.";
      }
    } finally {
      if (!loginLock) submit.disabled = false;
    }
  });

  // "Log out everywhere" ends every session of the owner (a lost phone, a shared computer) and closes every
  // dashboard; if it fails, the sessions are still there, so the owner is told and stays signed in.
  for (const [button, path] of [["logout", "/auth/logout"], ["logout-everywhere", "/auth/logout_everywhere"]]) {
    $(button).addEventListener("click", async () => {
      try {
        await api(path, { method: "POST", body: {} });
      } catch (e) {
        if (button === "logout-everywhere" && e.status !== 401) {
          toast(`Could not log out everywhere: ${e.message || "natter cannot be reached"}. Try again.`);
          return;
        }
        /* a plain logout: the session is gone either way from this page's point of view */
      }
      signedOut();
      showLogin();
    });
  }
}
