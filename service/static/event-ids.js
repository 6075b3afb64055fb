// Pure: ordering of event ids, which are Redis stream ids ("ms-seq").

/** Compare two Redis stream ids ("ms-seq"). */
export function compareIds(a, b) {
  const [am, as] = String(a).split("-");
  const [bm, bs] = String(b).split("-");
  const d = Number(am) - Number(bm);
  if (d !== 0) return d < 0 ? -1 : 1;
  const e = Number(as || 0) - Number(bs || 0);
  return e < 0 ? -1 : e > 0 ? 1 : 0;
}
