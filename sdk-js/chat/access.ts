/**
 * How the chat gets a token when the broker checks them (`/ui.json` says so): from the
 * configured same-origin endpoint (`[ui] token_url`, fetched with the user's cookies, so the
 * application that signed the user in vouches for them), or from the link that opened the page
 * (`/#lobby&token=JWT`, kept for this tab only and removed from the address bar). Without
 * either the page says sign-in is needed instead of showing a chat that cannot send.
 */

/** What the broker told the page (`/ui.json`). */
interface Settings {
  auth: boolean;
  token_url: string;
}

export type Access =
  /** An open broker: no token; names are labels anyone may choose. */
  | { kind: "open" }
  /** Tokens on: `token` is called before each connect and to refresh before expiry. */
  | { kind: "token"; token: () => Promise<string> }
  /** Tokens on and none to be had: `why` says what to do. */
  | { kind: "signin"; why: string };

const TOKEN_KEY = "roomd.chat.token";

/** Takes a `token=` part out of the fragment (keeping the room), into this tab's storage. */
export function takeFragmentToken(): void {
  const parts = location.hash.slice(1).split("&");
  const token = parts.find((p) => p.startsWith("token="));
  if (token === undefined) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(token.slice("token=".length)));
  const rest = parts.filter((p) => !p.startsWith("token=")).join("&");
  history.replaceState(null, "", `${location.pathname}${location.search}${rest === "" ? "" : `#${rest}`}`);
}

async function settings(): Promise<Settings> {
  try {
    const r = await fetch("/ui.json", { cache: "no-store" });
    if (r.ok) return (await r.json()) as Settings;
  } catch {
    // an older broker without /ui.json: it checks no tokens
  }
  return { auth: false, token_url: "" };
}

/** One token from the endpoint: the body as text, or JSON `{"token": ...}`. */
async function fetchToken(url: string): Promise<string> {
  const r = await fetch(url, { credentials: "include", cache: "no-store", headers: { Accept: "application/json, text/plain" } });
  if (!r.ok) throw new Error(`${url} answered ${r.status}`);
  const body = (await r.text()).trim();
  if (body.startsWith("{")) {
    const token = (JSON.parse(body) as { token?: unknown }).token;
    if (typeof token === "string" && token !== "") return token;
    throw new Error(`${url} answered JSON without a token`);
  }
  if (body === "") throw new Error(`${url} answered no token`);
  return body;
}

export async function access(): Promise<Access> {
  const s = await settings();
  if (!s.auth) return { kind: "open" };
  const fromLink = sessionStorage.getItem(TOKEN_KEY) ?? undefined;
  if (s.token_url !== "") {
    try {
      let first: string | undefined = await fetchToken(s.token_url);
      // The first token is the one just fetched; later calls (reconnects, refreshes) fetch anew.
      return {
        kind: "token",
        token: async () => {
          const t = first;
          first = undefined;
          return t ?? fetchToken(s.token_url);
        },
      };
    } catch (e) {
      if (fromLink === undefined) {
        return { kind: "signin", why: `Sign in first: this chat server lets only signed-in users in, and ${e instanceof Error ? e.message : String(e)}.` };
      }
    }
  }
  if (fromLink !== undefined) return { kind: "token", token: () => Promise.resolve(fromLink) };
  return { kind: "signin", why: "Sign in first: this chat server lets only signed-in users in. Open the chat from the application you signed in to, or with a link that carries a token." };
}
