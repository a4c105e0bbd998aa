// Built into web/static/app/ (git-ignored), served by web/app.py: index.html at "/",
// the hashed assets under /static/app/. No CDN: monitoring rooms sit on sealed intranets.
import { fileURLToPath, URL } from "node:url";
import vue from "@vitejs/plugin-vue";
import { defineConfig } from "vitest/config";

export default defineConfig({
  base: "/static/app/",
  plugins: [vue()],
  resolve: { alias: { "@": fileURLToPath(new URL("./src", import.meta.url)) } },
  build: {
    outDir: fileURLToPath(new URL("../static/app", import.meta.url)),
    emptyOutDir: true,
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      output: {
        // Stable vendor chunks: a change to our code does not re-download Element Plus.
        manualChunks(id: string) {
          if (id.includes("node_modules/echarts") || id.includes("node_modules/zrender")) return "echarts";
          if (id.includes("node_modules/element-plus")) return "element-plus";
          if (id.includes("node_modules/leaflet") || id.includes("node_modules/supercluster")) return "map";
          if (id.includes("node_modules")) return "vendor";
          return undefined;
        },
      },
    },
  },
  test: {
    include: ["tests/**/*.test.ts"],
    environment: "node",
  },
});
