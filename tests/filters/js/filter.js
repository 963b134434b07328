// A filter in JavaScript: adds `x-js-method` with the request's method, answers 429 when the
// configured `limit` of requests has been seen by this instance, and marks responses.
import { config } from 'sluice:filter/host@0.1.0';

let seen = 0;

export function validateConfig(text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw `not JSON: ${error}`;
  }
  if (parsed === null || typeof parsed.limit !== 'number') {
    throw 'expected {limit: NUMBER}';
  }
}

export function onRequest(request) {
  const { limit } = JSON.parse(config());
  seen += 1;
  if (seen > limit) {
    const body = new TextEncoder().encode('too many\n');
    return { tag: 'respond', val: { status: 429, headers: [['x-filter-lang', 'js']], body } };
  }
  request.setHeader('x-js-method', request.method());
  return { tag: 'continue' };
}

export function onResponse(response) {
  response.setHeader('x-filter-lang', 'js');
}
