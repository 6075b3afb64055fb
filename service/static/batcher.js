// Coalesce many updates into one render: at most once per frame (and at least every 250 ms in a
// background tab, where frames stop).

/** Run `fn` once per frame at most (and at least every 250 ms in a background tab). */
export function batcher(fn) {
  let queued = false;
  let timer = null;
  let raf = null;
  const run = () => {
    if (!queued) return;
    queued = false;
    if (raf !== null) cancelAnimationFrame(raf);
    if (timer !== null) clearTimeout(timer);
    raf = timer = null;
    fn();
  };
  const schedule = () => {
    if (queued) return;
    queued = true;
    raf = requestAnimationFrame(run);
    timer = setTimeout(run, 250);
  };
  schedule.flush = run;
  schedule.cancel = () => {
    queued = false;
    if (raf !== null) cancelAnimationFrame(raf);
    if (timer !== null) clearTimeout(timer);
  };
  return schedule;
}
