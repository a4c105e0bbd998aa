// The life of a view's map. A view removes its Leaflet map on unmount (map.remove()); a fetch
// or an animation frame started before that must not draw on it afterwards — Leaflet would add
// the layer to a map without panes and throw "Cannot read properties of undefined (reading
// 'appendChild')". Every async continuation that draws goes through `then` or checks `alive`.

export class Lifetime {
  private ended = false;

  /** False once the view is gone. */
  get alive(): boolean {
    return !this.ended;
  }

  end(): void {
    this.ended = true;
  }

  /** `use(value)` when `p` resolves, only if still alive; a rejection is left to the caller. */
  async then<T>(p: Promise<T>, use: (value: T) => void): Promise<void> {
    const value = await p;
    if (!this.ended) use(value);
  }
}
