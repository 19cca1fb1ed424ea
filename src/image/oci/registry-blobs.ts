import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { BlobCache } from "./blob-cache.js";
import { formatReference, type ImageReference } from "./reference.js";
import { MAX_MANIFEST_BYTES, type Descriptor } from "./registry-manifests.js";
import {
  parseJson,
  sha256,
  statusHint,
  type Json,
  type RegistryTransport,
} from "./registry-transport.js";

/** Blobs: layers streamed into the verified cache, and the image config read whole. */

/** `source` with its errors replaced by `wrap(err)`; a consumer that stops early still cancels it. */
async function* mapErrors<T>(
  source: AsyncIterable<T>,
  wrap: (err: unknown) => Error,
): AsyncGenerator<T> {
  try {
    yield* source;
  } catch (err) {
    throw wrap(err);
  }
}

/** A blob's response, or a clear error for its HTTP status (never an error page taken for data). */
async function fetchBlobResponse(
  http: RegistryTransport,
  ref: ImageReference,
  descriptor: Descriptor,
  kind: string,
): Promise<Response> {
  const response = await http.get(ref, `/v2/${ref.repository}/blobs/${descriptor.digest}`);
  if (!response.ok) {
    await response.body?.cancel();
    throw new BangerError(
      response.status === 404 ? ErrorCode.NotFound : ErrorCode.Precondition,
      `registry ${ref.registry} answered HTTP ${response.status} for ${kind} ${descriptor.digest} of ${formatReference(ref)}`,
      statusHint(response.status),
    );
  }
  return response;
}

/**
 * A blob through the cache: no request at all when it is already there.
 * It enters only with exactly `descriptor.size` bytes and the right digest;
 * reading stops as soon as it runs past the size.
 */
export async function fetchBlob(
  http: RegistryTransport,
  ref: ImageReference,
  descriptor: Descriptor,
  cache: BlobCache,
  onBytes?: (total: number) => void,
): Promise<string> {
  if (cache.has(descriptor.digest)) return cache.pathOf(descriptor.digest);
  const response = await fetchBlobResponse(http, ref, descriptor, "blob");
  const body = response.body
    ? (Readable.fromWeb(response.body as WebReadableStream<Uint8Array>) as AsyncIterable<Buffer>)
    : (Readable.from([]) as AsyncIterable<Buffer>);
  // Only the download's errors are network failures; the cache's own (disk full, ...) pass as they are.
  const download = mapErrors(body, (err) =>
    http.failure(err, ref, ref.registry, `while downloading blob ${descriptor.digest}`),
  );
  return cache.put(descriptor.digest, download, onBytes, descriptor.size);
}

/** The image config (env, entrypoint, ...) as JSON, its size and digest verified. */
export async function fetchConfig(
  http: RegistryTransport,
  ref: ImageReference,
  descriptor: Descriptor,
): Promise<Json> {
  const response = await fetchBlobResponse(http, ref, descriptor, "config");
  const what = `config ${descriptor.digest} of ${formatReference(ref)}`;
  // Held in memory: a declared size is not a licence to buffer gigabytes.
  if (descriptor.size > MAX_MANIFEST_BYTES)
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} declares ${descriptor.size} bytes, more than the ${MAX_MANIFEST_BYTES} an image config may have`,
    );
  const body = await http.readBody(
    response,
    ref,
    descriptor.size,
    `${what} is larger than the ${descriptor.size} bytes its descriptor declares`,
  );
  if (body.length !== descriptor.size) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} has ${body.length} bytes, but its descriptor declares ${descriptor.size}`,
    );
  }
  if (sha256(body) !== descriptor.digest)
    throw new BangerError(
      ErrorCode.InvalidParams,
      `digest mismatch for config ${descriptor.digest}: got ${sha256(body)}`,
    );
  return parseJson(body, what);
}
