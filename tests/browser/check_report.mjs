// Opens a job's report.html in headless Chromium and checks what a reader would see: every
// chart image loaded, with one image per expected plot (label distribution, one curves chart
// per fold, confusion matrix); every table rendered, visible, with body rows; and a
// full-page screenshot written where asked.
//
//   node check_report.mjs REPORT.html SCREENSHOT.png [--folds K]
//
// Without --folds, K is read from the report's own "folds" fact. Exit status: 0 when every
// check holds, 1 when one fails (each failure named on stderr as "FAIL: ..."), 2 when the
// check could not run (missing arguments, browser or page).
//
// Run by tests/tests/report_browser.rs; `make browser` installs Chromium and node_modules.

import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const CHROMIUM = process.env.FOLDTRAIN_CHROMIUM || "/usr/bin/chromium";
// Without these, Chromium's own outbound connections (updates, sync, QUIC probes) hang on a
// machine that reaches only a few registries; the sandbox needs privileges CI lacks.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/// The check could not run (exit status 2), as opposed to a check that failed (1).
class CannotRun extends Error {}

function usage(message) {
  throw new CannotRun(
    `${message}\nusage: node check_report.mjs REPORT.html SCREENSHOT.png [--folds K]`,
  );
}

function parseArgs(argv) {
  const positional = [];
  let folds = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--folds") {
      folds = Number.parseInt(argv[++i], 10);
      if (!(folds > 0)) usage(`--folds needs a positive integer, got ${argv[i]}`);
    } else {
      positional.push(argv[i]);
    }
  }
  if (positional.length !== 2) usage("expected REPORT.html and SCREENSHOT.png");
  return { report: resolve(positional[0]), screenshot: resolve(positional[1]), folds };
}

async function loadPlaywright() {
  try {
    return (await import("playwright-core")).chromium;
  } catch (e) {
    throw new CannotRun(
      `playwright-core is not installed in tests/browser/node_modules ` +
        `(${e.code ?? e.message}): run \`make browser\``,
    );
  }
}

/// What the page shows: each image's load state and box, each table's rows and box.
function inspectPage() {
  const box = (el) => {
    const r = el.getBoundingClientRect();
    return { width: r.width, height: r.height };
  };
  const visible = (el) => el.checkVisibility({ checkOpacity: true, checkVisibilityCSS: true });
  const facts = {};
  for (const dt of document.querySelectorAll("dl dt")) {
    facts[dt.textContent.trim()] = dt.nextElementSibling?.textContent.trim();
  }
  return {
    facts,
    images: [...document.images].map((img) => ({
      src: img.getAttribute("src"),
      complete: img.complete,
      naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight,
      visible: visible(img),
      ...box(img),
    })),
    tables: [...document.querySelectorAll("table")].map((table) => ({
      header: [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim()),
      bodyRows: [...table.tBodies].reduce((n, body) => n + body.rows.length, 0),
      visible: visible(table),
      ...box(table),
    })),
  };
}

function expectedPlots(folds) {
  const plots = ["label_distribution.png", "confusion_matrix.png"];
  for (let k = 0; k < folds; k++) plots.push(`curves_fold${k}.png`);
  return plots;
}

function check(page, folds) {
  const failures = [];
  const basename = (src) => (src ?? "").split(/[/\\]/).pop();

  for (const img of page.images) {
    if (!img.complete || img.naturalWidth === 0 || img.naturalHeight === 0) {
      failures.push(
        `image ${img.src} did not load (complete=${img.complete}, ` +
          `naturalWidth=${img.naturalWidth}, naturalHeight=${img.naturalHeight})`,
      );
    } else if (!img.visible || img.width === 0 || img.height === 0) {
      failures.push(`image ${img.src} is not visible (${img.width}x${img.height})`);
    }
  }
  for (const plot of expectedPlots(folds)) {
    if (!page.images.some((img) => basename(img.src) === plot)) {
      failures.push(`no <img> for the expected plot ${plot}`);
    }
  }

  if (page.tables.length === 0) failures.push("no <table> on the page");
  page.tables.forEach((table, i) => {
    const name = `table ${i + 1} (${table.header.slice(0, 3).join(", ")}...)`;
    if (table.bodyRows === 0) failures.push(`${name} has no body rows`);
    if (!table.visible || table.width === 0 || table.height === 0) {
      failures.push(`${name} is not visible (${table.width}x${table.height})`);
    }
  });
  return failures;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (!existsSync(args.report)) usage(`no report at ${args.report}`);
  if (!existsSync(CHROMIUM)) throw new CannotRun(`no Chromium at ${CHROMIUM}: run \`make browser\``);
  const chromium = await loadPlaywright();

  // A fresh profile each run, removed afterwards.
  const profile = mkdtempSync(join(tmpdir(), "foldtrain-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      args: CHROMIUM_ARGS,
      timeout: 60_000,
      viewport: { width: 1280, height: 900 },
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const failedRequests = [];
    page.on("requestfailed", (r) => failedRequests.push(`${r.url()} (${r.failure()?.errorText})`));
    page.on("pageerror", (e) => console.error(`check_report: page error: ${e.message}`));

    const url = pathToFileURL(args.report).href;
    const response = await page.goto(url, { waitUntil: "load", timeout: 30_000 });
    if (response && !response.ok()) throw new CannotRun(`${url} answered ${response.status()}`);
    const seen = await page.evaluate(inspectPage);
    let folds = args.folds;
    if (folds === null) {
      folds = Number.parseInt(seen.facts.folds, 10);
      if (!(folds > 0)) usage(`the report states no fold count (${seen.facts.folds}); pass --folds`);
    }

    await page.screenshot({ path: args.screenshot, fullPage: true, type: "png" });
    const png = readFileSync(args.screenshot);
    const failures = check(seen, folds);
    if (png.length <= PNG_SIGNATURE.length || !png.subarray(0, 8).equals(PNG_SIGNATURE)) {
      failures.push(`screenshot ${args.screenshot} is not a PNG (${png.length} bytes)`);
    }

    console.log(
      `report: ${url}\n` +
        `images: ${seen.images.length} (${seen.images.map((i) => `${i.src} ${i.naturalWidth}x${i.naturalHeight}`).join(", ")})\n` +
        `tables: ${seen.tables.length} (body rows ${seen.tables.map((t) => t.bodyRows).join(", ")})\n` +
        `screenshot: ${args.screenshot} (${png.length} bytes)`,
    );
    for (const r of failedRequests) console.error(`check_report: request failed: ${r}`);
    if (failures.length > 0) {
      for (const f of failures) console.error(`FAIL: ${f}`);
      process.exitCode = 1;
    } else {
      console.log(`ok: ${seen.images.length} images loaded, ${seen.tables.length} tables rendered`);
    }
  } finally {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`check_report: ${e instanceof CannotRun ? e.message : (e.stack ?? e)}`);
  process.exitCode = 2;
});
