// One creation per name at a time: a second image pull or kernel pull of a name already being
// made fails Busy at once (it does not race the first), and the name is free again once the
// first has settled, failed or not. The services share this through util/wait.ts's InflightByName.
import assert from "node:assert/strict";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import type { OciPuller } from "../src/image/service.js";
import { KernelService } from "../src/kernel/service.js";
import { createCommandRunner } from "../src/system/runner.js";
import { InflightByName } from "../src/util/wait.js";
import { imageServices } from "./helpers/services.js";
import { withTempStore } from "./helpers/temp-home.js";

/** A promise the test settles by hand, and how many times it was waited on. */
function held(): { wait(): Promise<never>; fail(): void; calls: number } {
  let reject!: (err: Error) => void;
  let waiting = new Promise<never>((_, r) => (reject = r));
  const h = {
    calls: 0,
    wait: () => {
      h.calls++;
      return waiting;
    },
    fail: () => {
      reject(new Error("the source went away"));
      waiting = new Promise<never>((_, r) => (reject = r));
    },
  };
  return h;
}

/** Catalogs and config are read before the source is asked: give that a bounded while. */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
}

const busy = (pattern: RegExp) => (err: unknown) =>
  err instanceof BangerError && err.code === ErrorCode.Busy && pattern.test(err.message);

test("InflightByName shows work from the call on, and forgets it once settled", async () => {
  const inflight = new InflightByName();
  let finish!: () => void;
  const running = inflight.run("a", () => new Promise<void>((r) => (finish = r)));
  assert.ok(inflight.get("a"), "visible before the caller awaits");
  assert.equal(inflight.get("b"), undefined);
  finish();
  await running;
  assert.equal(inflight.get("a"), undefined);
  await assert.rejects(
    inflight.run("a", async () => {
      throw new Error("no");
    }),
    /no/,
  );
  assert.equal(inflight.get("a"), undefined, "a failure frees the name too");
});

test("a second image pull of a name being pulled fails Busy; the name is free after", () =>
  withTempStore(async (home, store) => {
    const source = held();
    const oci: OciPuller = { defaultName: () => "img", fetchLayers: () => source.wait() };
    const { images } = imageServices(store, home.layout, { env: home.env, oci });
    const first = images.pull({ ref: "example.invalid/img:1" });
    await assert.rejects(
      images.pull({ ref: "example.invalid/img:2", name: "img" }),
      busy(/image "img" is being created right now/),
    );
    await until(() => source.calls === 1);
    assert.equal(source.calls, 1, "the second pull never reached the registry");
    source.fail();
    await assert.rejects(first, /the source went away/);
    const again = images.pull({ ref: "example.invalid/img:3" });
    await until(() => source.calls === 2);
    source.fail();
    await assert.rejects(again, /the source went away/);
    assert.equal(source.calls, 2, "a pull after the first one settled runs");
  }));

test("a second kernel pull of a name being installed fails Busy; the name is free after", () =>
  withTempStore(async (home, store) => {
    const source = held();
    const kernels = new KernelService({
      store,
      layout: home.layout,
      env: home.env,
      runner: createCommandRunner(),
      deriveDistroKernel: () => source.wait(),
    });
    const first = kernels.pull("debian-cloud");
    await assert.rejects(
      kernels.pull("debian-cloud"),
      busy(/kernel "debian-cloud" is being installed right now/),
    );
    await until(() => source.calls === 1);
    assert.equal(source.calls, 1);
    source.fail();
    await assert.rejects(first, /the source went away/);
    const again = kernels.pull("debian-cloud");
    await until(() => source.calls === 2);
    source.fail();
    await assert.rejects(again, /the source went away/);
    assert.equal(source.calls, 2, "a pull after the first one settled runs");
  }));
