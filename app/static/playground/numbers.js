// How the playground writes numbers: never rounding a small one away.

/** A number as short as it is exact: 1e-5, not 0.00001 (which a narrow input cut to "0.0000"). */
export function exact(n) {
  const a = Math.abs(n);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? n.toExponential().replace("e+", "e") : String(n);
}

/** `digits` decimals, or significant digits in exponent form where those decimals would all be 0
 * (a loss of 2e-5 is "2.000e-5", not "0.0000"). */
export function fixed(n, digits) {
  return n !== 0 && Math.abs(n) < 0.5 * 10 ** -digits ? n.toExponential(digits - 1) : n.toFixed(digits);
}
