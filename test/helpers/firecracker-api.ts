import fs from "node:fs/promises";
import { parse } from "yaml";
import type { FirecrackerRequest } from "../../src/vmm/firecracker/api.js";

// Firecracker's own API definition (swagger 2.0), shipped in ../shared.
export type Schema = {
  type?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  enum?: unknown[];
  items?: Schema;
  $ref?: string;
  minimum?: number;
  maximum?: number;
};
export interface Swagger {
  paths: Record<
    string,
    Record<string, { parameters?: Array<{ in: string; schema?: Schema; required?: boolean }> }>
  >;
  definitions: Record<string, Schema>;
}

const apiFile = new URL("../../../shared/firecracker-api.yaml", import.meta.url);

export async function loadApi(): Promise<Swagger> {
  return parse(await fs.readFile(apiFile, "utf8")) as Swagger;
}

/** Errors for `value` against a swagger schema: types, required fields, unknown fields, enums, bounds. */
export function validate(api: Swagger, schema: Schema, value: unknown, where: string): string[] {
  if (schema.$ref)
    return validate(api, api.definitions[schema.$ref.replace("#/definitions/", "")]!, value, where);
  const errors: string[] = [];
  if (schema.enum && !schema.enum.includes(value))
    errors.push(`${where}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`);
  switch (schema.type) {
    case "object": {
      if (typeof value !== "object" || value === null || Array.isArray(value))
        return [`${where}: expected an object`];
      const obj = value as Record<string, unknown>;
      for (const key of schema.required ?? [])
        if (!(key in obj)) errors.push(`${where}.${key}: required`);
      for (const [key, v] of Object.entries(obj)) {
        const prop = schema.properties?.[key];
        if (!prop) errors.push(`${where}.${key}: not in the API definition`);
        else errors.push(...validate(api, prop, v, `${where}.${key}`));
      }
      break;
    }
    case "array":
      if (!Array.isArray(value)) return [`${where}: expected an array`];
      value.forEach((v, i) =>
        errors.push(...validate(api, schema.items ?? {}, v, `${where}[${i}]`)),
      );
      break;
    case "string":
      if (typeof value !== "string") errors.push(`${where}: expected a string`);
      break;
    case "integer":
      if (!Number.isInteger(value)) errors.push(`${where}: expected an integer`);
      else if (
        (schema.minimum !== undefined && (value as number) < schema.minimum) ||
        (schema.maximum !== undefined && (value as number) > schema.maximum)
      ) {
        errors.push(`${where}: ${value} out of range`);
      }
      break;
    case "boolean":
      if (typeof value !== "boolean") errors.push(`${where}: expected a boolean`);
      break;
  }
  return errors;
}

/** The swagger path template matching a concrete path (e.g. /drives/{drive_id}). */
export function matchPath(api: Swagger, concrete: string): string | undefined {
  return Object.keys(api.paths).find((template) =>
    new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`).test(concrete),
  );
}

/**
 * Everything wrong with one request against the definition: an unknown path or method, a
 * body where none is taken or none where one is, and the body's own errors.
 */
export function requestErrors(api: Swagger, req: FirecrackerRequest): string[] {
  const where = `${req.method} ${req.path}`;
  const template = matchPath(api, req.path);
  if (!template) return [`${where}: not an API path`];
  const op = api.paths[template]![req.method.toLowerCase()];
  if (!op) return [`${where}: no such method`];
  const bodyParam = op.parameters?.find((p) => p.in === "body");
  if (!bodyParam?.schema) return req.body === undefined ? [] : [`${where}: takes no body`];
  if (req.body === undefined) return bodyParam.required ? [`${where}: needs a body`] : [];
  return validate(api, bodyParam.schema, req.body, where);
}
