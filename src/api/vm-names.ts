import { randomInt } from "node:crypto";

/** VM names are DNS labels: they become `<name>.vm`. */
export const VM_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const ADJECTIVES = [
  "brisk",
  "calm",
  "clever",
  "eager",
  "fuzzy",
  "gentle",
  "jolly",
  "lucky",
  "mellow",
  "nimble",
  "proud",
  "quiet",
  "rapid",
  "sunny",
  "witty",
  "zesty",
];
const NOUNS = [
  "badger",
  "comet",
  "falcon",
  "gecko",
  "heron",
  "lynx",
  "marten",
  "otter",
  "panda",
  "quokka",
  "raven",
  "sparrow",
  "tapir",
  "walrus",
  "yak",
  "zebra",
];

/** A friendly name such as `brisk-otter`; the caller checks it is free. */
export function randomVmName(): string {
  return `${ADJECTIVES[randomInt(ADJECTIVES.length)]}-${NOUNS[randomInt(NOUNS.length)]}`;
}
