import ElementPlus from "element-plus";
import "element-plus/dist/index.css";
import "leaflet/dist/leaflet.css";
import { createApp } from "vue";
import App from "./App.vue";
import { i18n } from "./i18n";
import { router } from "./router";
import "./styles.css";
import { installTestHooks } from "./hooks";

const app = createApp(App);
app.use(i18n);
app.use(router);
app.use(ElementPlus);
app.mount("#app");
installTestHooks();
