/** Style sheets imported for their effect: esbuild bundles them into page.css. */
declare module "*.css";
