/**
 * Browser test helpers (playwright-core with Debian's Chromium): a page
 * watched for everything that must not happen on the console — page errors,
 * console errors and Content-Security-Policy violations.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core';

export interface WatchedPage {
  readonly page: Page;
  readonly context: BrowserContext;
  /** Page errors, console errors and CSP violations seen so far. */
  problems(): Promise<string[]>;
}

/** A new context and page on `url` (`width` × 900, or a phone's 844 below 500 px), watched from before any page script runs. */
export async function openWatched(browser: Browser, url: string, width = 1280): Promise<WatchedPage> {
  const context = await browser.newContext({ viewport: { width, height: width < 500 ? 844 : 900 } });
  const page = await context.newPage();
  const seen: string[] = [];
  // Before any page script: collect every CSP violation the page reports.
  await page.addInitScript(() => {
    const list: string[] = [];
    (window as unknown as { cspViolations: string[] }).cspViolations = list;
    document.addEventListener('securitypolicyviolation', (event) => list.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}:${event.lineNumber}`));
  });
  page.on('pageerror', (error) => seen.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    // The session probe before sign-in, a wrong password and a refused code are answered 401: Chromium logs each failed fetch.
    if (message.type() === 'error' && !/Failed to load resource: the server responded with a status of 401/.test(message.text())) seen.push(`console: ${message.text()}`);
  });
  await page.goto(url);
  return {
    page,
    context,
    async problems() {
      const csp = await page.evaluate(() => (window as unknown as { cspViolations?: string[] }).cspViolations ?? []).catch(() => [] as string[]);
      return [...seen, ...csp.map((v) => `csp: ${v}`)];
    },
  };
}
