// js-libp2p 3.x targets Node 22; Node 20 lacks Promise.withResolvers.
// Loaded with `node --import` before anything else.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
