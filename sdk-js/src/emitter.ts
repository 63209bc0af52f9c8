/** A typed event emitter: `on` returns the function that removes the handler. */

export type Handler<A extends unknown[]> = (...args: A) => void;

export class Emitter<M extends { [K in keyof M]: unknown[] }> {
  private handlers: { [K in keyof M]?: Set<Handler<M[K]>> } = {};

  /** Call `fn` on every `event`; returns a function that stops it. */
  on<K extends keyof M>(event: K, fn: Handler<M[K]>): () => void {
    let set = this.handlers[event];
    if (set === undefined) {
      set = new Set();
      this.handlers[event] = set;
    }
    set.add(fn);
    return () => this.off(event, fn);
  }

  /** Call `fn` on the next `event` only. */
  once<K extends keyof M>(event: K, fn: Handler<M[K]>): () => void {
    const off = this.on(event, (...args: M[K]) => {
      off();
      fn(...args);
    });
    return off;
  }

  off<K extends keyof M>(event: K, fn: Handler<M[K]>): void {
    this.handlers[event]?.delete(fn);
  }

  /** Deliver to every handler; one handler throwing does not stop the others or the SDK. */
  protected emit<K extends keyof M>(event: K, ...args: M[K]): void {
    const set = this.handlers[event];
    if (set === undefined) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
