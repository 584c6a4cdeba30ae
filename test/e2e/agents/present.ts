// Agent: presents a ticket (argv: fdSocket ticket) on the fd channel and prints what came back.
import { present, print } from "./raw.js";

const [fdSocket, ticket] = process.argv.slice(2);
print(await present(fdSocket!, ticket!));
