/**
 * The tab title counts messages from others that arrived while the tab was hidden ("(3) #lobby
 * · roomd chat"), so a chat in a background tab can be noticed; showing the tab clears it.
 */
export class Unread {
  private base = document.title;
  private count = 0;

  constructor() {
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.reset();
    });
  }

  /** The title without a count (set on each room change, which also clears the count). */
  set title(text: string) {
    this.base = text;
    this.reset();
  }

  /** A message from someone else arrived: counted only while the tab is hidden. */
  arrived(): void {
    if (document.visibilityState !== "hidden") return;
    this.count++;
    document.title = `(${this.count}) ${this.base}`;
  }

  private reset(): void {
    this.count = 0;
    document.title = this.base;
  }
}
